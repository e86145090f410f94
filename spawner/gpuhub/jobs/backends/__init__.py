"""Job backends, chosen by the service's ``backend_class`` trait."""
