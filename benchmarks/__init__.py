"""zlogcollect's measurement suite: collector capacity, app-side cost, bridge, memory, latency, loss."""
