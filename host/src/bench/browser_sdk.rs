//! The requests the two browser SDKs send, as docs/sources.md records them (RudderStack
//! `@rudderstack/analytics-js` 3.34.1, Segment `@segment/analytics-next` 1.84.3): paths,
//! headers, the headers their preflights ask for, and event bodies of about 1 KB (page,
//! userAgent, library in `context`).
//!
//! Each simulated page is one visitor of `https://shop.example` using one SDK; its `n`th
//! request is a page view first, then single events, every fourth a small batch (2–10 events,
//! by beacon for RudderStack, `/v1/b` for Segment).

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::load::base64;

/// The shop whose pages send; the browser source allows it.
pub const ORIGIN: &str = "https://shop.example";
pub const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/148.0.0.0 Safari/537.36";
/// What RudderStack's preflights ask for (`Access-Control-Request-Headers`, first attempts).
const RUDDERSTACK_PREFLIGHT: &str = "anonymousid,authorization,content-type,sentat";
/// What Segment's preflights ask for.
const SEGMENT_PREFLIGHT: &str = "authorization";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sdk {
    RudderStack,
    Segment,
}

/// One request a page sends.
pub struct SdkRequest {
    /// Path and query.
    pub path: String,
    /// `Access-Control-Request-Headers` of its preflight; `None` for a beacon (no preflight).
    pub preflight: Option<&'static str>,
    /// Send the write key as HTTP Basic (beacons carry no headers of their own).
    pub basic_auth: bool,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    pub events: u64,
}

/// One visitor's page: the SDK it uses and who it is.
pub struct Page {
    pub sdk: Sdk,
    id: usize,
    write_key: String,
    anonymous_id: String,
    session: u64,
}

impl Page {
    /// Visitor `id`: even ones use RudderStack, odd ones Segment.
    pub fn new(id: usize, write_key: &str) -> Page {
        Page {
            sdk: if id.is_multiple_of(2) {
                Sdk::RudderStack
            } else {
                Sdk::Segment
            },
            id,
            write_key: write_key.to_string(),
            anonymous_id: uuid::Uuid::new_v4().to_string(),
            session: 1_796_221_133_715 + id as u64,
        }
    }

    /// The `n`th request of this page.
    pub fn request(&self, n: usize) -> SdkRequest {
        // 2..=10 events, varied across visitors and requests.
        let batch = 2 + (self.id * 7 + n * 3) % 9;
        match (self.sdk, n) {
            (Sdk::RudderStack, 0) => self.rudderstack_single("page"),
            (Sdk::RudderStack, 1) => self.rudderstack_single("identify"),
            (Sdk::RudderStack, n) if n % 4 == 3 => self.rudderstack_beacon(batch),
            (Sdk::RudderStack, _) => self.rudderstack_single("track"),
            (Sdk::Segment, 0) => self.segment_single("page"),
            (Sdk::Segment, n) if n % 4 == 3 => self.segment_batch(batch),
            (Sdk::Segment, _) => self.segment_single("track"),
        }
    }

    fn page_context(&self) -> Value {
        let product = self.id % 500;
        json!({
            "path": format!("/products/p-{product}"),
            "referrer": "https://www.google.com/",
            "search": "",
            "title": format!("Product p-{product} | Shop Example"),
            "url": format!("{ORIGIN}/products/p-{product}"),
        })
    }

    fn properties(&self, kind: &str) -> Value {
        match kind {
            "page" => self.page_context(),
            "identify" => json!({}),
            _ => json!({
                "product_id": format!("p-{}", self.id % 500),
                "price": 19.99,
                "currency": "EUR",
                "quantity": 1,
            }),
        }
    }

    /// A RudderStack event (`originalTimestamp` and `sentAt`, no `timestamp`).
    fn rudderstack_event(&self, kind: &str, now: &str) -> Value {
        let mut page = self.page_context();
        page["tab_url"] = page["url"].clone();
        page["initial_referrer"] = json!("$direct");
        page["initial_referring_domain"] = json!("");
        let mut event = json!({
            "type": kind,
            "anonymousId": self.anonymous_id,
            "channel": "web",
            "messageId": uuid::Uuid::new_v4().to_string(),
            "originalTimestamp": now,
            "sentAt": now,
            "integrations": {"All": true},
            "properties": self.properties(kind),
            "context": {
                "traits": {},
                "sessionId": self.session,
                "sessionStart": kind == "page",
                "app": {"name": "RudderLabs JavaScript SDK", "namespace": "com.rudderlabs.javascript",
                        "version": "3.34.1", "installType": "npm"},
                "library": {"name": "RudderLabs JavaScript SDK", "version": "3.34.1", "variant": "bundled"},
                "userAgent": USER_AGENT,
                "os": {"name": "", "version": ""},
                "locale": "en-US",
                "screen": {"width": 1920, "height": 1080, "density": 1, "innerWidth": 1280, "innerHeight": 720},
                "campaign": {},
                "page": page,
                "timezone": "GMT+0100",
            },
        });
        match kind {
            "identify" => {
                event["userId"] = json!(format!("user-{}", self.id));
                event["context"]["traits"] =
                    json!({"email": format!("visitor{}@mail.example", self.id), "plan": "free"});
            }
            "track" => event["event"] = json!("Product Viewed"),
            _ => event["name"] = json!("Product"),
        }
        event
    }

    /// A Segment event (the device time in `timestamp`, the write key in the body).
    fn segment_event(&self, kind: &str, now: &str) -> Value {
        let mut event = json!({
            "type": kind,
            "properties": self.properties(kind),
            "anonymousId": self.anonymous_id,
            "messageId": format!("ajs-next-{}", uuid::Uuid::new_v4()),
            "timestamp": now,
            "sentAt": now,
            "writeKey": self.write_key,
            "integrations": {"Segment.io": true},
            "context": {
                "page": self.page_context(),
                "userAgent": USER_AGENT,
                "userAgentData": {"brands": [{"brand": "Chromium", "version": "148"},
                                             {"brand": "Not.A/Brand", "version": "24"}],
                                  "mobile": false, "platform": "Linux"},
                "locale": "en-US",
                "library": {"name": "analytics.js", "version": "next-1.84.3"},
                "campaign": {},
                "timezone": "Europe/Paris",
            },
            "_metadata": {"bundled": ["Segment.io"], "unbundled": [], "bundledIds": []},
        });
        if kind == "track" {
            event["event"] = json!("Product Viewed");
        }
        event
    }

    fn rudderstack_single(&self, kind: &str) -> SdkRequest {
        let now = now();
        SdkRequest {
            path: format!("/v1/{kind}"),
            preflight: Some(RUDDERSTACK_PREFLIGHT),
            basic_auth: true,
            headers: vec![
                ("content-type", "application/json;charset=UTF-8".into()),
                ("accept", "application/json".into()),
                ("anonymousid", base64(self.anonymous_id.as_bytes())),
                ("sentat", now.clone()),
            ],
            body: self.rudderstack_event(kind, &now).to_string(),
            events: 1,
        }
    }

    /// `navigator.sendBeacon`: a `text/plain` blob, the key in the URL, no preflight.
    fn rudderstack_beacon(&self, size: usize) -> SdkRequest {
        let now = now();
        let batch: Vec<Value> = (0..size)
            .map(|_| self.rudderstack_event("track", &now))
            .collect();
        SdkRequest {
            path: format!("/beacon/v1/batch?writeKey={}", self.write_key),
            preflight: None,
            basic_auth: false,
            headers: vec![("content-type", "text/plain;charset=UTF-8".into())],
            body: json!({"batch": batch, "sentAt": now}).to_string(),
            events: size as u64,
        }
    }

    fn segment_single(&self, kind: &str) -> SdkRequest {
        let now = now();
        let short = &kind[..1];
        SdkRequest {
            path: format!("/v1/{short}"),
            preflight: Some(SEGMENT_PREFLIGHT),
            basic_auth: true,
            headers: vec![("content-type", "text/plain".into())],
            body: self.segment_event(kind, &now).to_string(),
            events: 1,
        }
    }

    /// The `batching` delivery strategy: events without `sentAt`, one for the batch.
    fn segment_batch(&self, size: usize) -> SdkRequest {
        let now = now();
        let batch: Vec<Value> = (0..size)
            .map(|_| {
                let mut e = self.segment_event("track", &now);
                if let Some(o) = e.as_object_mut() {
                    o.remove("sentAt");
                }
                e
            })
            .collect();
        SdkRequest {
            path: "/v1/b".into(),
            preflight: Some(SEGMENT_PREFLIGHT),
            basic_auth: true,
            headers: vec![("content-type", "text/plain".into())],
            body: json!({"writeKey": self.write_key, "batch": batch, "sentAt": now}).to_string(),
            events: size as u64,
        }
    }
}

fn now() -> String {
    OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_about_a_kilobyte_and_batches_hold_two_to_ten() {
        for id in 0..2 {
            let page = Page::new(id, "wk_browser");
            for n in 0..12 {
                let r = page.request(n);
                assert!(
                    (2..=10).contains(&r.events) || r.events == 1,
                    "{}",
                    r.events
                );
                let per_event = r.body.len() as u64 / r.events;
                assert!((800..1600).contains(&per_event), "{} bytes", per_event);
                assert!(serde_json::from_str::<Value>(&r.body).is_ok());
            }
        }
        let beacon = Page::new(0, "wk_browser").request(3);
        assert_eq!(beacon.path, "/beacon/v1/batch?writeKey=wk_browser");
        assert!(beacon.preflight.is_none() && !beacon.basic_auth);
        assert_eq!(Page::new(1, "wk_browser").request(2).path, "/v1/t");
    }
}
