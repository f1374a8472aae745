"""unlearnd: machine unlearning as a service (HTTP side)."""
