#!/usr/bin/env node
import { App } from 'aws-cdk-lib';
import { configFromContext } from '../lib/config';
import { LinkFetcherStack } from '../lib/link-fetcher-stack';

const app = new App();
const config = configFromContext(app.node);

new LinkFetcherStack(app, 'LinkFetcher', {
  stackName: config.stackName,
  config,
  // Account and region come from the CLI's credentials/AWS_REGION when there are
  // any; without them the template is environment-agnostic (offline synth).
  env: { account: process.env.CDK_DEFAULT_ACCOUNT, region: process.env.CDK_DEFAULT_REGION },
  description: `HLS Sentinel-2 link fetcher and link subscription handler (Rust), stage ${config.stage}`,
});
