"""OAuth scopes the simulated Google endpoints grant (the vendor's side of the contract)."""

EMM_SCOPE = "https://www.googleapis.com/auth/androidenterprise"
