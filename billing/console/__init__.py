"""The console's Payments workspace (views, forms, URL patterns), mounted under /admin/payments/ by
billing/admin.py through ConsoleAdminSite.register_console_urls."""
