"""The ``stream`` driver's observability: collecting the actors' metrics, readiness, and the HTTP endpoint."""
