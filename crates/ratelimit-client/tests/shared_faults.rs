//! The shared state when Redis fails, replies wrongly, or a reservation is dropped at any poll.
