"""Built-in connection types. Each module is a plugin registered through the
``connect_service`` entry-point group, exactly as a third-party package is."""
