def image_payload(*a, **k):
    raise NotImplementedError
