"""The service's routers, one per resource: health, catalogue, estimates, plans."""
