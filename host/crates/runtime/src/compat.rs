//! Plugins built against WIT 0.1.x, served by a 0.2 host.
//!
//! Their imports (`http`, `log` at 0.1.x) are the same shapes as 0.2's and delegate to the
//! same host code; their per-job `transform` export stands in for `transform-batch` (see
//! `instance`). Everything here is a conversion between two generated copies of one type.

use super::bindings::v0_1::sluice::destination::{http as http01, log as log01, types as types01};
use super::bindings::{self as v02, sluice::destination as dest02};
use super::host_api::HostState;

impl types01::Host for HostState {}

impl log01::Host for HostState {
    async fn log(&mut self, level: log01::Level, message: String) {
        dest02::log::Host::log(self, level.into(), message).await
    }

    async fn enabled(&mut self, level: log01::Level) -> bool {
        dest02::log::Host::enabled(self, level.into()).await
    }
}

impl http01::Host for HostState {
    async fn send(
        &mut self,
        request: http01::HttpRequest,
    ) -> Result<http01::HttpResponse, http01::HttpError> {
        dest02::http::Host::send(self, request.into())
            .await
            .map(Into::into)
            .map_err(Into::into)
    }

    async fn send_batch(
        &mut self,
        requests: Vec<http01::HttpRequest>,
    ) -> Vec<Result<http01::HttpResponse, http01::HttpError>> {
        let requests = requests.into_iter().map(Into::into).collect();
        dest02::http::Host::send_batch(self, requests)
            .await
            .into_iter()
            .map(|r| r.map(Into::into).map_err(Into::into))
            .collect()
    }
}

impl From<log01::Level> for v02::Level {
    fn from(level: log01::Level) -> v02::Level {
        match level {
            log01::Level::Trace => v02::Level::Trace,
            log01::Level::Debug => v02::Level::Debug,
            log01::Level::Info => v02::Level::Info,
            log01::Level::Warn => v02::Level::Warn,
            log01::Level::Error => v02::Level::Error,
        }
    }
}

impl From<http01::HttpRequest> for v02::HttpRequest {
    fn from(r: http01::HttpRequest) -> v02::HttpRequest {
        v02::HttpRequest {
            method: r.method,
            url: r.url,
            headers: r.headers,
            body: r.body,
            timeout_ms: r.timeout_ms,
        }
    }
}

impl From<v02::HttpResponse> for http01::HttpResponse {
    fn from(r: v02::HttpResponse) -> http01::HttpResponse {
        http01::HttpResponse {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }
}

impl From<v02::HttpError> for http01::HttpError {
    fn from(e: v02::HttpError) -> http01::HttpError {
        match e {
            v02::HttpError::Denied(m) => http01::HttpError::Denied(m),
            v02::HttpError::DeniedAddress(m) => http01::HttpError::DeniedAddress(m),
            v02::HttpError::Timeout => http01::HttpError::Timeout,
            v02::HttpError::Connect(m) => http01::HttpError::Connect(m),
            v02::HttpError::InvalidRequest(m) => http01::HttpError::InvalidRequest(m),
            v02::HttpError::Other(m) => http01::HttpError::Other(m),
        }
    }
}

/// A 0.2 batch job as the `job-context` a 0.1 `transform` takes.
pub(crate) fn job_context(batch: &v02::BatchContext, job: &v02::BatchJob) -> types01::JobContext {
    (&v02::job_context(batch, job)).into()
}

impl From<&v02::JobContext> for types01::JobContext {
    fn from(c: &v02::JobContext) -> types01::JobContext {
        types01::JobContext {
            job_id: c.job_id,
            idempotency_key: c.idempotency_key.clone(),
            message_id: c.message_id.clone(),
            workspace_id: c.workspace_id.clone(),
            source_id: c.source_id.clone(),
            destination_id: c.destination_id.clone(),
            attempt: c.attempt,
        }
    }
}

impl From<&v02::Request> for types01::Request {
    fn from(r: &v02::Request) -> types01::Request {
        types01::Request {
            context: (&r.context).into(),
            body: r.body.clone(),
        }
    }
}

impl From<types01::Failure> for v02::Failure {
    fn from(f: types01::Failure) -> v02::Failure {
        v02::Failure {
            code: f.code,
            message: f.message,
        }
    }
}

impl From<types01::TransformError> for v02::TransformError {
    fn from(e: types01::TransformError) -> v02::TransformError {
        match e {
            types01::TransformError::Retry(f) => v02::TransformError::Retry(f.into()),
            types01::TransformError::Abort(f) => v02::TransformError::Abort(f.into()),
        }
    }
}

impl From<types01::Outcome> for v02::Outcome {
    fn from(o: types01::Outcome) -> v02::Outcome {
        match o {
            types01::Outcome::Delivered => v02::Outcome::Delivered,
            types01::Outcome::Retry(f) => v02::Outcome::Retry(f.into()),
            types01::Outcome::Throttled(ms) => v02::Outcome::Throttled(ms),
            types01::Outcome::Abort(f) => v02::Outcome::Abort(f.into()),
            types01::Outcome::TooLarge(f) => v02::Outcome::TooLarge(f.into()),
        }
    }
}
