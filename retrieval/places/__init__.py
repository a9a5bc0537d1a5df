"""Where photos were taken: an offline gazetteer (GeoNames) and the place phrases a query holds."""
