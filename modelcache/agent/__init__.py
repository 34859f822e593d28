"""The node daemon: desired state -> store -> flip -> reload; metrics and the cache event log."""
