//! `[[source]]` and `[[destination]]`: what events come in and where they go.
//!
//! Each table is validated in named steps, in the order the fields are written; the first
//! problem is reported with the file, line and field. Ids (source, workspace, destination, and
//! each destination a source names) are made through the validated types of `sluice_core::ids`,
//! so an id that passes here keeps to their rule everywhere, and the layers above receive the
//! types, not text. Destinations are read first: a source may only name destinations of its own
//! workspace.

use std::collections::HashSet;
use std::ops::Range;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use sluice_core::{
    AllowedOrigin, DestinationId, EventFilter, InvalidId, OrderingScope, RetryOverrides, SourceId,
    SourceLimits, WorkspaceId,
};

use super::{ConfigError, Locator};

use sluice_core::catalog::default_max_concurrency;
pub use sluice_core::catalog::{DestinationConfig, SourceConfig};

/// A `[[source]]` as written, with spans for messages.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    id: Spanned<String>,
    workspace: Spanned<String>,
    write_key: Spanned<String>,
    #[serde(default)]
    destinations: Vec<Spanned<String>>,
    #[serde(default)]
    allowed_origins: Vec<Spanned<String>>,
    #[serde(default)]
    limits: Option<Spanned<SourceLimits>>,
}

/// A `[[destination]]` as written, with spans for messages.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDestination {
    id: Spanned<String>,
    workspace: Spanned<String>,
    plugin: Spanned<String>,
    #[serde(default)]
    config: Option<Spanned<toml::Value>>,
    #[serde(default)]
    retry: Option<Spanned<RetryOverrides>>,
    #[serde(default)]
    ordering: OrderingScope,
    #[serde(default = "default_max_concurrency")]
    max_concurrency: usize,
    #[serde(default)]
    rate_limit: Option<Spanned<f64>>,
    #[serde(default)]
    allowed_private_networks: Vec<IpNet>,
    #[serde(default)]
    filter: Option<Spanned<RawFilter>>,
}

/// A destination's `filter` as written: each entry with its span, so that a bad one is
/// reported on its own line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFilter {
    #[serde(default)]
    allow_types: Vec<Spanned<String>>,
    #[serde(default)]
    deny_types: Vec<Spanned<String>>,
    #[serde(default)]
    allow_events: Vec<Spanned<String>>,
    #[serde(default)]
    deny_events: Vec<Spanned<String>>,
}

/// Where a table's problems are reported: the file and the table (`destination[2]`).
struct Table<'a> {
    at: &'a Locator<'a>,
    name: String,
}

impl Table<'_> {
    fn invalid(&self, span: Range<usize>, field: &str, message: String) -> ConfigError {
        self.at
            .invalid(span, &format!("{}.{field}", self.name), message)
    }

    /// Makes an id of type `T` from the text at `span`, or says why it is not one.
    fn id<T: TryFrom<String, Error = InvalidId>>(
        &self,
        raw: &Spanned<String>,
        field: &str,
    ) -> Result<T, ConfigError> {
        T::try_from(raw.get_ref().clone())
            .map_err(|e| self.invalid(raw.span(), field, e.to_string()))
    }
}

/// Validates every `[[destination]]`: ids unique, each table sane.
pub(super) fn destinations(
    raw: Vec<Spanned<RawDestination>>,
    at: &Locator,
) -> Result<Vec<DestinationConfig>, ConfigError> {
    let mut seen: HashSet<DestinationId> = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, d) in raw.into_iter().enumerate() {
        let table = Table {
            at,
            name: format!("destination[{i}]"),
        };
        let d = d.into_inner();
        let id: DestinationId = table.id(&d.id, "id")?;
        if !seen.insert(id.clone()) {
            return Err(table.invalid(
                d.id.span(),
                "id",
                format!("duplicate destination id `{id}`"),
            ));
        }
        out.push(destination(d, id, &table)?);
    }
    Ok(out)
}

/// One destination's fields, once its id is known to be valid and new.
fn destination(
    d: RawDestination,
    id: DestinationId,
    table: &Table,
) -> Result<DestinationConfig, ConfigError> {
    let workspace: WorkspaceId = table.id(&d.workspace, "workspace")?;
    let plugin = plugin_name(d.plugin, table)?;
    let config = plugin_config(d.config, table)?;
    let retry = retry_overrides(d.retry, table)?;
    let rate_limit = rate_limit(d.rate_limit, table)?;
    let filter = event_filter(d.filter, table)?;
    Ok(DestinationConfig {
        id,
        workspace,
        plugin,
        config,
        retry,
        ordering: d.ordering,
        max_concurrency: d.max_concurrency.max(1),
        rate_limit,
        allowed_private_networks: d.allowed_private_networks,
        filter,
    })
}

fn plugin_name(plugin: Spanned<String>, table: &Table) -> Result<String, ConfigError> {
    if plugin.get_ref().is_empty() {
        return Err(table.invalid(plugin.span(), "plugin", "must not be empty".into()));
    }
    Ok(plugin.into_inner())
}

/// The plugin's settings as the JSON object its `configure` receives.
fn plugin_config(
    config: Option<Spanned<toml::Value>>,
    table: &Table,
) -> Result<serde_json::Value, ConfigError> {
    let Some(c) = config else {
        return Ok(serde_json::Value::Object(Default::default()));
    };
    let span = c.span();
    let value = serde_json::to_value(c.into_inner())
        .map_err(|e| table.invalid(span.clone(), "config", e.to_string()))?;
    if !value.is_object() {
        return Err(table.invalid(span, "config", "must be a table".into()));
    }
    Ok(value)
}

fn retry_overrides(
    retry: Option<Spanned<RetryOverrides>>,
    table: &Table,
) -> Result<RetryOverrides, ConfigError> {
    let Some(r) = retry else {
        return Ok(RetryOverrides::default());
    };
    let span = r.span();
    let r = r.into_inner();
    if let (Some(min), Some(max)) = (r.min_backoff, r.max_backoff)
        && min > max
    {
        return Err(table.invalid(
            span,
            "retry",
            "min_backoff must not exceed max_backoff".into(),
        ));
    }
    if r.min_backoff == Some(Duration::ZERO) {
        return Err(table.invalid(
            span,
            "retry.min_backoff",
            "must be greater than zero".into(),
        ));
    }
    Ok(r)
}

fn rate_limit(rate: Option<Spanned<f64>>, table: &Table) -> Result<Option<f64>, ConfigError> {
    match rate {
        None => Ok(None),
        Some(r) if r.get_ref().is_finite() && *r.get_ref() > 0.0 => Ok(Some(r.into_inner())),
        Some(r) => Err(table.invalid(
            r.span(),
            "rate_limit",
            "must be a number of events per second greater than zero".into(),
        )),
    }
}

/// The filter, checked by the rule every path applies ([`EventFilter::validate`]); a problem
/// is reported at the entry at fault, or at the filter when it concerns a whole list.
fn event_filter(
    raw: Option<Spanned<RawFilter>>,
    table: &Table,
) -> Result<EventFilter, ConfigError> {
    let Some(raw) = raw else {
        return Ok(EventFilter::default());
    };
    let span = raw.span();
    let raw = raw.into_inner();
    let text = |list: &[Spanned<String>]| list.iter().map(|s| s.get_ref().clone()).collect();
    let filter = EventFilter {
        allow_types: text(&raw.allow_types),
        deny_types: text(&raw.deny_types),
        allow_events: text(&raw.allow_events),
        deny_events: text(&raw.deny_events),
    };
    filter.validate().map_err(|e| {
        let list = match e.field {
            "allow_types" => &raw.allow_types,
            "deny_types" => &raw.deny_types,
            "allow_events" => &raw.allow_events,
            _ => &raw.deny_events,
        };
        let at = e
            .entry
            .and_then(|i| list.get(i))
            .map_or(span, |entry| entry.span());
        table.invalid(at, &format!("filter.{}", e.field), e.message)
    })?;
    Ok(filter)
}

/// Validates every `[[source]]`: ids and write keys unique, destinations known and of the
/// source's workspace.
pub(super) fn sources(
    raw: Vec<Spanned<RawSource>>,
    destinations: &[DestinationConfig],
    at: &Locator,
) -> Result<Vec<SourceConfig>, ConfigError> {
    let mut seen: HashSet<SourceId> = HashSet::new();
    let mut keys: HashSet<String> = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, s) in raw.into_iter().enumerate() {
        let table = Table {
            at,
            name: format!("source[{i}]"),
        };
        let s = s.into_inner();
        let id: SourceId = table.id(&s.id, "id")?;
        if !seen.insert(id.clone()) {
            return Err(table.invalid(s.id.span(), "id", format!("duplicate source id `{id}`")));
        }
        let workspace: WorkspaceId = table.id(&s.workspace, "workspace")?;
        if s.write_key.get_ref().is_empty() || !keys.insert(s.write_key.get_ref().clone()) {
            return Err(table.invalid(
                s.write_key.span(),
                "write_key",
                "must be non-empty and unique across sources".into(),
            ));
        }
        let routes = source_destinations(&s.destinations, &workspace, destinations, &table)?;
        let mut allowed_origins = Vec::new();
        for o in &s.allowed_origins {
            let origin = AllowedOrigin::parse(o.get_ref())
                .map_err(|e| table.invalid(o.span(), "allowed_origins", e.to_string()))?;
            allowed_origins.push(origin);
        }
        let limits = match s.limits {
            Some(l) => {
                let span = l.span();
                let limits = l.into_inner();
                limits
                    .validate()
                    .map_err(|e| table.invalid(span, &e.field, e.message))?;
                limits
            }
            None => SourceLimits::default(),
        };
        out.push(SourceConfig {
            id,
            workspace,
            write_key: s.write_key.into_inner(),
            destinations: routes,
            allowed_origins,
            limits,
        });
    }
    Ok(out)
}

/// The destinations a source names: each an existing destination of the same workspace.
fn source_destinations(
    named: &[Spanned<String>],
    workspace: &WorkspaceId,
    destinations: &[DestinationConfig],
    table: &Table,
) -> Result<Vec<DestinationId>, ConfigError> {
    let mut out = Vec::with_capacity(named.len());
    for d in named {
        let id: DestinationId = table.id(d, "destinations")?;
        let Some(dest) = destinations.iter().find(|x| x.id == id.as_str()) else {
            return Err(table.invalid(
                d.span(),
                "destinations",
                format!("unknown destination `{id}`"),
            ));
        };
        if dest.workspace != workspace.as_str() {
            return Err(table.invalid(
                d.span(),
                "destinations",
                format!(
                    "destination `{}` belongs to workspace `{}`, not `{workspace}`",
                    dest.id, dest.workspace
                ),
            ));
        }
        out.push(id);
    }
    Ok(out)
}
