"""`watch --events`: event sources (a local folder's file events, Pub/Sub notifications of a bucket),
the event loop that gathers arrivals into batches over the one loader, and systemd's sd_notify."""
