/**
 * The inventory as a JSON Schema (draft 2020-12), from the same zod schema the loader validates
 * with, for editors (yaml-language-server: completion, unknown keys underlined as you type) and for
 * tools. `k8s-ha schema` prints it. It describes the file as written: a nodes entry is a host or a
 * group of hosts (expand.ts), and names and addresses may hold a range. What only the loader can
 * judge (an address that is not one, a duplicate name, a file that is not there) is left to it:
 * the schema never refuses what the loader accepts.
 */
import { z } from 'zod';
import { inventorySchema, node } from './schema.js';

type Json = Record<string, unknown>;

/** A host's schema whose name may hold a range (node-[01:40]): the name's own pattern is the loader's to check, once expanded. */
function rangedHost(host: Json): Json {
  const properties = { ...(host.properties as Json) };
  const name = { ...(properties.name as Json) };
  delete name.pattern;
  properties.name = { ...name, description: 'The host name; a range like node-[01:40] makes one host per number.' };
  return { ...host, properties };
}

export function inventoryJsonSchema(version: string): Json {
  const schema = z.toJSONSchema(inventorySchema, { io: 'input', unrepresentable: 'any', target: 'draft-2020-12' }) as Json;
  const host = rangedHost(z.toJSONSchema(node, { io: 'input', unrepresentable: 'any', target: 'draft-2020-12' }) as Json);
  delete host.$schema;
  const hostSettings = { ...(host.properties as Json) };
  delete hostSettings.name;
  delete hostSettings.address;
  const group: Json = {
    type: 'object',
    description: 'A group of hosts: its settings (ssh, lb, repointTo) go to each of its hosts, whose own keys win.',
    properties: {
      group: { type: 'string', description: 'A name for the group, for messages.' },
      hosts: { type: 'array', minItems: 1, items: host },
      ...hostSettings,
    },
    required: ['hosts'],
    additionalProperties: false,
  };
  const properties = schema.properties as Json;
  const nodes = properties.nodes as Json;
  properties.nodes = { ...nodes, items: { anyOf: [rangedHost(nodes.items as Json), group] } };
  // nodes may be left out when every master says node: true (expand.ts makes the list).
  schema.required = (schema.required as string[] | undefined)?.filter((k) => k !== 'nodes');
  const masters = properties.masters as Json;
  properties.masters = { ...masters, items: rangedHost(masters.items as Json) };
  return {
    $schema: schema.$schema,
    $id: `k8s-ha-inventory-${version}.schema.json`,
    title: `k8s-ha inventory (k8s-ha ${version})`,
    description: 'Masters, nodes and how to reach them; host ranges like node-[01:40] and groups of hosts are allowed. Reference: docs/inventory.md.',
    ...Object.fromEntries(Object.entries(schema).filter(([k]) => k !== '$schema')),
  };
}
