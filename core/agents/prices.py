"""The price table: dollars per million tokens by model, loaded from ``config/prices.toml``."""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_PRICES_PATH = Path(__file__).resolve().parents[2] / "config" / "prices.toml"


@dataclass(frozen=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float


@dataclass
class PriceTable:
    """Prices by model id prefix; the longest matching prefix wins, else ``default``."""

    models: dict[str, Price] = field(default_factory=dict)
    default: Price = field(default_factory=lambda: Price(0.0, 0.0))
    _warned: set[str] = field(default_factory=set, repr=False)

    @classmethod
    def load(cls, path: Path | None = None) -> PriceTable:
        path = path or DEFAULT_PRICES_PATH
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read price table {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"price table {path} is not valid TOML: {exc}") from exc
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, source: str = "price table") -> PriceTable:
        default = _price(raw.get("default", {"input_per_mtok": 0, "output_per_mtok": 0}), source)
        models_raw = raw.get("models", {})
        if not isinstance(models_raw, dict):
            raise ConfigError(f"{source}: [models] must be a table")
        models = {
            str(name): _price(entry, f"{source} [models.{name}]")
            for name, entry in models_raw.items()
        }
        return cls(models=models, default=default)

    def price_for(self, model: str) -> Price:
        best = ""
        for name in self.models:
            if model.startswith(name) and len(name) > len(best):
                best = name
        if best:
            return self.models[best]
        if model not in self._warned:
            self._warned.add(model)
            log.warning("no price for model %r; using the default price", model)
        return self.default

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float:
        price = self.price_for(model)
        return (input_tokens * price.input_per_mtok + output_tokens * price.output_per_mtok) / 1e6


def _price(entry: Any, where: str) -> Price:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a table with input_per_mtok and output_per_mtok")
    try:
        inp = float(entry["input_per_mtok"])
        out = float(entry["output_per_mtok"])
    except KeyError as exc:
        raise ConfigError(f"{where}: missing {exc.args[0]}") from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: prices must be numbers") from exc
    if inp < 0 or out < 0:
        raise ConfigError(f"{where}: prices must not be negative")
    return Price(inp, out)


__all__ = ["DEFAULT_PRICES_PATH", "Price", "PriceTable"]
