"""splitserve.cluster: start a local router + workers as processes and stop them cleanly."""
