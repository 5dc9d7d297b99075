//! Several OS processes sharing one budget through Redis; one of them killed with SIGKILL mid-run.
