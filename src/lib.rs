//! Holds the workspace's integration tests (tests/).
