"""Gates a tool call passes before it runs: fleet-wide rate limits and concurrency caps."""
