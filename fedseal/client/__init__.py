"""Site side: the ClientApp, site configuration, local training and the fl-client CLI."""
