"""Training the dual encoder; apart from the library so importing retrieval never pulls training code."""
