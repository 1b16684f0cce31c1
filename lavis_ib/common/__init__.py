"""The ground floor every layer shares: registry, errors, config composition and the run schema,
durable files, paths, precision, devices, distributed helpers and console output."""
