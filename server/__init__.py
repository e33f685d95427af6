"""LicenseService: the license-enforcement policy decision service."""
