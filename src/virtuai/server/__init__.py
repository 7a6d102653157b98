"""The composition root: builds settings, store, drivers, loops and the API, and runs them."""
