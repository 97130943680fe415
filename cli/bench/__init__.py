"""`krocket bench`: producer/consumer benchmarks shaped like the peer kit."""
