"""The service: the client and its one start path, tenancy, configuration, the dev server."""
