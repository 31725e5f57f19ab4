"""From raw record bytes to a validated event or a typed dead letter: ``records`` (parse, policy lookup),
``strict_json`` (the I-JSON parser it uses) and ``tenancy`` (who the tenant is; verdict-topic rules)."""
