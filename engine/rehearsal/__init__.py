"""Rehearsals: every procedure run against a throwaway world with its incident injected, and proven to fix it."""
