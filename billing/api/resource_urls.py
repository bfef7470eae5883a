"""Plans catalog, me/*, admin/* endpoints."""

urlpatterns: list = []
