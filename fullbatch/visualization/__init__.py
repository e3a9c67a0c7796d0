"""Loss landscapes, training curves and their figures: entry-point code. May import every layer, run included."""
