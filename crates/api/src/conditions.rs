//! Condition types and reasons reported in `status.conditions`.

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const SUSPENDED: &str = "Suspended";

/// Reasons, in CamelCase as the API conventions ask.
pub mod reason {
    pub const AVAILABLE: &str = "Available";
    pub const ROLLING_OUT: &str = "RollingOut";
    pub const ROLLOUT_COMPLETE: &str = "RolloutComplete";
    /// The update revision failed its health gate (deadline, crash loop); see `status.failedRevision`.
    pub const ROLLOUT_FAILED: &str = "RolloutFailed";
    pub const PODS_NOT_READY: &str = "PodsNotReady";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const CONFLICT: &str = "Conflict";
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// RBAC forbids the operator to write a child; the message names the verb, kind and name.
    pub const FORBIDDEN: &str = "Forbidden";
    /// The API server refused a write of a child for another reason (admission, quota, an
    /// exhausted Service IP range); the message names the action, kind, name and the server's
    /// message.
    pub const APPLY_FAILED: &str = "ApplyFailed";
    pub const SUSPENDED: &str = "Suspended";
    pub const NOT_SUSPENDED: &str = "NotSuspended";
    pub const AS_EXPECTED: &str = "AsExpected";
    pub const PAUSED: &str = "Paused";
    pub const DELETING: &str = "Deleting";
}
