"""The admin API under /admin/, on the admin listener, behind operator authentication."""
