"""``make_grid`` and ``save_image`` names only; both raise: they are unused on lightseg's MONAI Label path."""


def _unavailable(name: str):
    def stub(*args, **kwargs):
        raise NotImplementedError(
            f"torchvision.utils.{name} is a stand-in installed by lightseg's scripts/label_env.sh; "
            "install the real torchvision if you need it"
        )

    stub.__name__ = name
    return stub


make_grid = _unavailable("make_grid")
save_image = _unavailable("save_image")
