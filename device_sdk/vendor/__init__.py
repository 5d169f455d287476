"""Third-party code copied whole into the SDK; see README.md next to each package."""
