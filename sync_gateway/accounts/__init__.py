"""People who run the gateway: accounts, personal API tokens, OIDC sign-in."""
