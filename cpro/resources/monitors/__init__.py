"""Monitor resources, one module per type, each registered with cpro.plugins.MONITOR_TYPES."""
