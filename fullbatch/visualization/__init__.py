"""Loss landscapes, training curves and their figures."""
