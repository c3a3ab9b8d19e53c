"""Outbound webhooks: signed JSON deliveries of run outcomes to operators' URLs."""
