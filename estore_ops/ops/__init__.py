"""Running unattended: run tracking and history, heartbeats and health, alerts and their channels, the run lock, doctor, verify."""
