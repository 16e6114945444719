<?php
/**
 * The few 1C-Bitrix classes the Boomerang module calls, and nothing more, for
 * tests/test_source_bitrix.py: an event, the event manager, an order with its properties and
 * basket, a basket, a date, and the global $USER.
 */

namespace Bitrix\Main {
    class Event
    {
        private array $parameters;

        public function __construct(string $module, string $type, array $parameters = [])
        {
            $this->parameters = $parameters;
        }

        public function getParameter(string $key)
        {
            return $this->parameters[$key] ?? null;
        }
    }

    class EventManager
    {
        public static array $handlers = [];
        private static ?EventManager $instance = null;

        public static function getInstance(): EventManager
        {
            return self::$instance ??= new EventManager();
        }

        public function addEventHandler(string $module, string $type, $callback): void
        {
            self::$handlers[] = [$module, $type, $callback];
        }
    }
}

namespace Bitrix\Main\Type {
    class DateTime
    {
        public function __construct(private int $timestamp)
        {
        }

        public function getTimestamp(): int
        {
            return $this->timestamp;
        }
    }
}

namespace Bitrix\Sale {
    class PropertyValue
    {
        public function __construct(private $value)
        {
        }

        public function getValue()
        {
            return $this->value;
        }
    }

    class PropertyCollection
    {
        public function __construct(private array $values)
        {
        }

        public function getUserEmail(): ?PropertyValue
        {
            return isset($this->values['EMAIL']) ? new PropertyValue($this->values['EMAIL']) : null;
        }

        public function getPhone(): ?PropertyValue
        {
            return isset($this->values['PHONE']) ? new PropertyValue($this->values['PHONE']) : null;
        }

        public function getPayerName(): ?PropertyValue
        {
            return isset($this->values['FIO']) ? new PropertyValue($this->values['FIO']) : null;
        }
    }

    class BasketItem
    {
        public function __construct(private array $fields)
        {
        }

        public function getProductId(): int
        {
            return $this->fields['PRODUCT_ID'];
        }

        public function getPrice(): float
        {
            return $this->fields['PRICE'];
        }

        public function getQuantity(): float
        {
            return $this->fields['QUANTITY'];
        }

        public function getField(string $name)
        {
            return $this->fields[$name] ?? null;
        }
    }

    class Basket implements \IteratorAggregate
    {
        public function __construct(private array $items, private int $fuserId = 1, private string $currency = 'RUB')
        {
        }

        public function getIterator(): \ArrayIterator
        {
            return new \ArrayIterator($this->items);
        }

        public function getFUserId(): int
        {
            return $this->fuserId;
        }

        public function getPrice(): float
        {
            return array_sum(array_map(fn ($i) => $i->getPrice() * $i->getQuantity(), $this->items));
        }

        public function getCurrency(): string
        {
            return $this->currency;
        }
    }

    class Order
    {
        public static array $saved = [];

        public function __construct(public array $fields, private array $properties, private Basket $basket)
        {
            self::$saved[$fields['ID']] = $this;
        }

        public static function load(int $id): ?Order
        {
            return self::$saved[$id] ?? null;
        }

        public function getId(): int
        {
            return $this->fields['ID'];
        }

        public function getField(string $name)
        {
            return $this->fields[$name] ?? null;
        }

        public function getPrice(): float
        {
            return $this->fields['PRICE'];
        }

        public function getCurrency(): string
        {
            return $this->fields['CURRENCY'];
        }

        public function getUserId(): int
        {
            return $this->fields['USER_ID'];
        }

        public function isPaid(): bool
        {
            return $this->fields['PAYED'] === 'Y';
        }

        public function isShipped(): bool
        {
            return ($this->fields['DEDUCTED'] ?? 'N') === 'Y';
        }

        public function isCanceled(): bool
        {
            return $this->fields['CANCELED'] === 'Y';
        }

        public function getPropertyCollection(): PropertyCollection
        {
            return new PropertyCollection($this->properties);
        }

        public function getBasket(): Basket
        {
            return $this->basket;
        }
    }
}

namespace {
    class CUser
    {
        public function __construct(private int $id, private string $email)
        {
        }

        public function IsAuthorized(): bool
        {
            return true;
        }

        public function GetID(): int
        {
            return $this->id;
        }

        public function GetEmail(): string
        {
            return $this->email;
        }
    }
}
