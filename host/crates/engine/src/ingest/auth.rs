//! Finding the write key: HTTP Basic username (RudderStack SDKs, @segment/analytics-node), else
//! `writeKey` in the JSON body (Segment's analytics-python sends no Authorization header).

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine;

use super::error::ApiError;

/// The write key from the `Authorization: Basic` header, if there is one.
pub fn basic_auth_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not valid text"))?;
    let Some(encoded) = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
    else {
        return Err(ApiError::unauthorized(
            "the Authorization header must be HTTP Basic with the write key as username",
        ));
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| ApiError::unauthorized("the Basic credentials are not valid base64"))?;
    let decoded = String::from_utf8(decoded)
        .map_err(|_| ApiError::unauthorized("the Basic credentials are not UTF-8"))?;
    let key = decoded.split(':').next().unwrap_or_default();
    Ok((!key.is_empty()).then(|| key.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn username_is_the_key() {
        // base64("wk_1:")
        assert_eq!(
            basic_auth_key(&headers("Basic d2tfMTo=")).unwrap(),
            Some("wk_1".into())
        );
        assert_eq!(basic_auth_key(&HeaderMap::new()).unwrap(), None);
        assert!(basic_auth_key(&headers("Bearer x")).is_err());
        assert!(basic_auth_key(&headers("Basic !!!")).is_err());
    }
}
