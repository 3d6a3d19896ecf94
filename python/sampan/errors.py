"""Errors shared by the engine's parts; the daemon maps `status` to the HTTP answer."""


class SampanError(Exception):
    status = 500

    @property
    def message(self) -> str:
        return str(self)


class InvalidArgument(SampanError):
    status = 400


class InvalidReference(InvalidArgument):
    pass


class NotFound(SampanError):
    status = 404


class ImageNotFound(NotFound):
    pass


class Conflict(SampanError):
    status = 409


class Unauthorized(SampanError):
    status = 401


class RegistryError(SampanError):
    status = 500
