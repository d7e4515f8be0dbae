"""The built-in sampler stages, one module each; `decodelab.samplers.registry.load_stages` imports them all."""
