"""digits load testing: Locust users, the locustfile and the benchmark command (builds on the client)."""
