"""Background work of `passthrough serve`: webhook delivery, expiry and retention (one leader runs them)."""
