"""The long-running service: which checks each target gets (plan), when they run (slots, shard), file_sd
discovery, the monitoring WebSocket, reloads and systemd notification.
"""
