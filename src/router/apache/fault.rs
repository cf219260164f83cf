//! Test hooks, compiled only with the feature `fault-injection` (which only the crate's own
//! tests enable): change a member with a deliberately broken request, to check how the driver
//! reports what Apache does with one. Not part of cutover's binary.

use super::*;

const BOGUS_NONCE: &str = "00000000-0000-0000-0000-000000000000";

/// A deliberately broken change request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Send the POST without a Referer.
    NoReferer,
    /// Send a nonce Apache never issued, on every attempt.
    WrongNonce,
    /// Send a nonce Apache never issued on the first attempt only (as after a restart).
    StaleNonceOnce,
}

impl Fault {
    /// The nonce to send, and whether to send the Referer.
    pub(super) fn request(self, nonce: &str, retried: bool) -> (String, bool) {
        match self {
            Fault::WrongNonce => (BOGUS_NONCE.to_string(), true),
            Fault::StaleNonceOnce if !retried => (BOGUS_NONCE.to_string(), true),
            Fault::NoReferer => (nonce.to_string(), false),
            _ => (nonce.to_string(), true),
        }
    }
}

impl Apache {
    /// Change one member's flags as a test would, with an optional deliberate fault. The
    /// verbs use the same path without a fault.
    pub async fn change_member(
        &self,
        balancer: &str,
        worker: &str,
        set: &[(MemberFlag, bool)],
        fault: Fault,
    ) -> Result<()> {
        let b = self.read_one(balancer_name(balancer)).await?;
        self.apply(&b.name, worker, set, &b.nonce, fault)
            .await
            .map(|_| ())
    }
}
