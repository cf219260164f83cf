//! Reading a router with a deadline: what every caller of [`Router::observe`] needs.

use std::time::Duration;

use super::Router;
use crate::model::RouterState;

/// Read one router, giving up after `limit`. The error is the router's own message, or that it
/// did not answer in time.
pub async fn observe_within(
    router: &dyn Router,
    limit: Duration,
) -> std::result::Result<RouterState, String> {
    match tokio::time::timeout(limit, router.observe()).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(_) => Err(format!(
            "no answer within {}",
            crate::timefmt::millis(limit)
        )),
    }
}
