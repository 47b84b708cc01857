-- lower NAME: a throttling report on NAME lowers it if it is adaptive; on
-- a template, every instance of it here; on a key of a template, that
-- key's instance, made if it has none (the worker that saw the 429 may
-- have let go of it already).
local name = arg_name
local refusal = limit_or_key(name)
if refusal then return cjson.encode(refusal) end
for _, each in ipairs(with_instances(name)) do lower(each) end
return finish({ ok = view(load_limit(name)) })
