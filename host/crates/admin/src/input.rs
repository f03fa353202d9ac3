//! Checks on request input shared by the handlers. Filters are bound as parameters, so any
//! text is safe in SQL; what PostgreSQL cannot store (NUL) or what is absurdly long is refused
//! here with 400 rather than failing in the database.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::error::ApiError;
use sluice_store::LaneId;
use sluice_store::admin::JobFilter;

/// Longest text filter accepted, in bytes.
pub const MAX_FILTER_BYTES: usize = 1024;

pub fn check_text(field: &str, text: &str) -> Result<(), ApiError> {
    if text.contains('\0') {
        return Err(ApiError::bad(format!("{field}: must not contain NUL")));
    }
    if text.len() > MAX_FILTER_BYTES {
        return Err(ApiError::bad(format!(
            "{field}: at most {MAX_FILTER_BYTES} bytes"
        )));
    }
    Ok(())
}

pub fn check_texts(filter: &JobFilter) -> Result<(), ApiError> {
    for (field, text) in filter.texts() {
        if let Some(t) = text {
            check_text(field, t)?;
        }
    }
    Ok(())
}

pub fn parse_time(field: &str, text: &str) -> Result<OffsetDateTime, ApiError> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|_| ApiError::bad(format!("{field}: not an RFC 3339 time")))
}

pub fn lane(workspace: String, destination: String) -> Result<LaneId, ApiError> {
    check_text("workspace", &workspace)?;
    check_text("destination", &destination)?;
    Ok(LaneId {
        workspace_id: workspace,
        destination_id: destination,
    })
}
