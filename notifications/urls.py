"""/v1/notifications"""

urlpatterns: list = []
