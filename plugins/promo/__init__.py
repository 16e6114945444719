"""Built-in promo code providers."""
