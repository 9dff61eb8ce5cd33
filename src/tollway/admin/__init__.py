"""The admin API under /admin/, behind the admin key."""
