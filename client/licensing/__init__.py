"""Client side of LicenseService: generated stubs (licensing.v1), a typed client, the CLI."""
