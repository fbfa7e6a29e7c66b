"""Quality and statistics: FID/KID/PRDC in Inception space, and later classification stats."""
